"""BoxCostPro webhook gateway: the authenticated edge for payment provider webhooks."""
