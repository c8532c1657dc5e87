"""Packet sources (AF_PACKET ring, pcap/pcapng files) and the vectorised decoder."""
