"""Alma side: migration form, user XML, REST client."""
