"""How pacsvaultd runs: a supervisor, N serving workers and one back office (see README, "How it runs")."""
