"""`photo-enhance`: the command-line client of the photo-enhance gateway (CONTRACT section 5)."""
