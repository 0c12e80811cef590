"""The instrument: every generator (G.pt, the baselines) from the same held-out starts and prompts, scored the same
way, judged by the same criteria, written to one evaluation folder."""
