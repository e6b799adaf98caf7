"""wM-Bus receiver sticks as pure framings (bytes in, frames out; requests as bytes): IMST iM871A
(:mod:`.imst`), Amber AMB8465/AMB8665 (:mod:`.amber`) and ``rtl_wmbus`` text lines (:mod:`.rtlwmbus`).
The serial drivers that use them live in ``edge``.
"""

from __future__ import annotations
