"""Adapters that let other frameworks send mail through FluxMail.

``fluxmail.backends.django.FluxMailBackend`` is Django's ``EMAIL_BACKEND`` (needs the
``fluxmail[django]`` extra). Each adapter imports its framework only when it is imported itself.
"""
