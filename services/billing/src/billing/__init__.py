"""BoxCostPro billing: payment transactions, subscriptions and webhook events."""
