"""The embedded local backend. Every ARN it makes (Lambda functions, state machines, executions, the
gateway's messages) names this one made-up account and region, the ones moto uses by default."""
LOCAL_ACCOUNT = "123456789012"
LOCAL_REGION = "us-east-1"
