"""Feedback: what relays, mailbox reports and recipients say about sent mail, recorded in one
taxonomy (:mod:`.record`) whatever reported it."""
