"""hwsim: simulated hardware for development, demos, training and tests.

- :mod:`hwsim.meters` — meter models imitating real products (Kamstrup MULTICAL 403/603 heat,
  Kamstrup MULTICAL 21 cold water, Diehl HYDRUS hot water, ABB A44 electricity, Elvaco CMa10 room
  temperature), encoded with :mod:`protocols.mbus.encode`.
- :mod:`hwsim.consumption`, :mod:`hwsim.climate` — households, seasons, Swedish weather and holidays.
- :mod:`hwsim.building` — ``build_building(seed, apartments)`` -> property, site export and meters.
- :mod:`hwsim.segment` — ``MbusSegment``: a wired M-Bus segment on a pseudo-terminal.
- :mod:`hwsim.faults` — fault injection with a JSON-lines truth log.
- :mod:`hwsim.fleet` — many properties published straight to MQTT for load tests.
- :mod:`hwsim.clock` — ``SimClock(start, speed)``.
"""
