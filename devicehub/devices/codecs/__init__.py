"""The built-in device protocols, one module each (see L{devicehub.devices.codec})."""
