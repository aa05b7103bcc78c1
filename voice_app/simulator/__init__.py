"""`voice-app call`: a caller simulator that plays Twilio against this app (see cli.py)."""
