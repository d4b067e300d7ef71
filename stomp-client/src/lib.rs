//! STOMP client with ActiveMQ failover URLs.
