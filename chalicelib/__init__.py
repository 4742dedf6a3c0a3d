"""callflow: a Plivo voice application on AWS Chalice. Everything deployed besides app.py lives here."""
