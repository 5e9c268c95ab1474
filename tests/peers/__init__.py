"""Real peer programs that tests run against, each built or installed on first use."""
