-- Emit a session's events (see emit in _common.lua) without writing its state: a transition
-- Redis does not hold (an inactive session already swept from it), or its removal.
-- ARGV: member, keep_ms, then the events. Returns how many were added.
return emit(ARGV[1], 3, tonumber(ARGV[2]))
