"""Built-in Prefect flows: thin compositions of platform calls, made through the SDK with the run's token."""
