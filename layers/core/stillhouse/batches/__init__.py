"""OpenAI's Batch API across the fleet: files in S3, batches as chunks of lines, each chunk one job."""
