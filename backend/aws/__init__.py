"""The AWS backend: boto3 clients for S3, SageMaker, Lambda and Step Functions."""
