"""Who is calling, and what they may do: principals, roles, the access table."""
