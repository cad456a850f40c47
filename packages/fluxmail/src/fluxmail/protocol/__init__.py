"""SMTP without I/O: replies, commands, the DATA encoding, AUTH and the session conversations.

Nothing in this package touches a socket. The conversations in :mod:`.session` are generators
that yield what to write and how many replies to read; the sync and async transports in
:mod:`fluxmail.transport` only perform that I/O, so both speak exactly the same protocol.
"""
