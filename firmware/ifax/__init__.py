"""Internet Fax reception by POP3 polling (RFC 3965 simple mode): client, fax reader, poller."""
