"""ACK OpenAPI (CS 2015-12-15, ROA JSON): node pools over the ECS/ESS fleet, tasks, signatures, errors."""
