"""ECS + ESS simulation: instance-type catalogue, mixed-instances scaling groups, instance lifecycle, spot reclaim."""
