"""Monitoring: Evidently drift and quality over routes' prediction logs, monitors, alerts."""
