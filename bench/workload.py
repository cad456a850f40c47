"""The one workload every client in the benchmark sends, defined once.

Each message ``i`` (0 <= i < N) goes from :data:`SENDER` to :func:`recipient` ``(i)`` with the
subject ``Hello User i`` and a plain-text body of about 1.7 KB that names the recipient and
their number, so a whole message is about 2 KB on the wire. The body is written with the
``{{ name }}`` / ``{{ n }}`` placeholders of FluxMail's ``MessageTemplate``;
:data:`BODY_FORMAT` is the same text for ``str.format`` (the Python peers), and the Node
client gets :data:`BODY_FORMAT` with its own substitution. Every line stays under 78
characters after substitution, so every client may send the body as 7bit text (no
quoted-printable or base64 pass skews the comparison).
"""

from __future__ import annotations

from typing import Final

SENDER: Final = "bench@example.com"
RECIPIENT_PREFIX: Final = "user"  # message i goes to user<i>@RECIPIENT_DOMAIN
RECIPIENT_DOMAIN: Final = "example.com"
NAME_PREFIX: Final = "User "  # and greets "User <i>"
SUBJECT_TEMPLATE: Final = "Hello {{ name }}"
SUBJECT_FORMAT: Final = "Hello {name}"
# Used in Message-ID right-hand sides, so no client looks up the machine's own name per message.
MESSAGE_ID_DOMAIN: Final = "bench.example"

BODY_TEMPLATE: Final = """\
Dear {{ name }},

Thank you for being subscriber number {{ n }} of the Flux weekly letter. This
issue is about sending mail at scale: what a relay expects from a client that
has thousands of messages to deliver, and how to keep every one of them apart
from the others while still sharing the connection between them.

A bulk send is mostly waiting. The client writes a command, the relay answers,
the client writes the next one. Pipelining lets the client write the envelope
commands together and read the answers together, which saves a round trip per
command; a pool of connections lets several transactions wait at once, which
hides the rest of the latency. Neither changes what the relay sees: one
message, one sender, one recipient, one reply.

What the client builds matters as much as how it talks. Each message here is
rendered fresh for its recipient, {{ name }}, with a subject and a body of
its own, a date and a message id. Nothing is cached between messages, because
in a real campaign nothing can be: the names, the links and the offers differ.

Your account number is {{ n }}, and your letter was prepared for {{ name }}
alone. If you did not ask for it, you can leave the list at any time from the
link at the bottom of every issue; we will not write again.

Next week: retries, back-off, and why a 4xx reply is not a failure yet. We
will also look at what a relay means by each of its replies, when it is safe
to send the same message twice, and how {{ name }} can tell from the log
which of the messages were taken and which still wait for another try.

With kind regards,
The Flux team

--
Flux weekly, issue 42, sent to subscriber {{ n }}.
You are receiving this because you subscribed at example.com.
"""

BODY_FORMAT: Final = BODY_TEMPLATE.replace("{{ name }}", "{name}").replace("{{ n }}", "{n}")


def recipient(i: int) -> str:
    """The envelope and ``To`` address of message ``i``: a different mailbox per message."""
    return f"{RECIPIENT_PREFIX}{i}@{RECIPIENT_DOMAIN}"


def name(i: int) -> str:
    """The display name that personalises message ``i``."""
    return f"{NAME_PREFIX}{i}"
