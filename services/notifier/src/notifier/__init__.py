"""BoxCostPro notifier: templated transactional email with a durable log."""
