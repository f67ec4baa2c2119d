"""Runtime pieces every BoxCostPro payment service shares. Knows nothing of payments, email or SQL."""
