"""The cyber range: a model served over HTTP as a hospital serves it (API keys, per-key rate
limits and daily budgets, a durable query log), for attacks over the network."""
