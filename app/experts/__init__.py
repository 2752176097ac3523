"""专家网络: expert profiles per category and tag, agents' open questions routed to them, answers,
and an answer turned into a knowledge draft that goes through the normal review."""
