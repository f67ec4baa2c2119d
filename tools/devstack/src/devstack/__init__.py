"""Local development stack for BoxCostPro payments (not shipped in the service images)."""
