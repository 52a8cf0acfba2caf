"""What operators see of the system: metrics (CloudWatch EMF, and Prometheus where configured) and traces."""
