"""学习路径: ordered reading lists required for roles (and departments), completed from the agent
channel's view events, and "what changed since you last read it"."""
