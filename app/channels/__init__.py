"""Channel delivery: the read model the front ends consume (CTI softphone, website FAQ, WeChat,
the APP), separate from the editors' API. Only published, valid, readable items shown on the
channel ever leave here, rendered for that channel."""
