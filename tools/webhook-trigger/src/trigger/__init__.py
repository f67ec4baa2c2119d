"""Local trigger tool for Stripe and Razorpay webhooks."""
