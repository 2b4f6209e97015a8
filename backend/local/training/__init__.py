"""Local training: the image-classification algorithm run in a worker process (see service.py)."""
