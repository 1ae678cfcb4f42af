//! Entity keys, keyrings, capabilities, tickets and the challenge-response handshake
