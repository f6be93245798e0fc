"""Interventions: the diagnosis fed back into training, run as controlled arms."""
