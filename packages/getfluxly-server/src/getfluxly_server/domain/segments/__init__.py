"""Segments (engine spec section 3): the rule grammar and its evaluation (:mod:`.rules`),
saved segments (:mod:`.store`) and their membership kept current (:mod:`.membership`)."""
