"""What a request says, read strictly and with no web framework: keys, values, query
parameters, JSON, the Idempotency-Key header. Mistakes are ``errors.py``'s plain
exceptions; the web layer turns them into problems."""
