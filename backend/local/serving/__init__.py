"""Local endpoints: one process per endpoint with SageMaker's container contract and data capture."""
