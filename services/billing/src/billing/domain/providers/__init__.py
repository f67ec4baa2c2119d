"""Reading each provider's events into facts: Stripe's, Razorpay's, and the field readers they share."""
