"""HTTP routes, one module per resource. Handlers parse, call the domain, encode."""
