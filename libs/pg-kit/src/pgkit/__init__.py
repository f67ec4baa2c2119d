"""PostgreSQL plumbing shared by services that own a schema. Knows nothing of payments or email."""
