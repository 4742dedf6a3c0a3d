"""`make bench`: latency, S3/DynamoDB traffic, cold start and memory goals of callflow (never deployed)."""
