"""Automations (engine spec section 4): definitions (:mod:`.definition`), their management
(:mod:`.manage`), durable runs (:mod:`.engine`), what starts and resumes them
(:mod:`.triggers`), the background runner (:mod:`.runner`), times of day in a profile's zone
(:mod:`.schedule`), and the webhook step's job (:mod:`.webhooks`)."""
