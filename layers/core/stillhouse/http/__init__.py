"""HTTP: the Powertools resolver with the one error mapping, the public API and the RunPod callback API."""
