//! Reason codes: every MQTT 5.0 reason code (spec 2.4) with its name, the MQTT 3.1.1 CONNACK
//! return codes (3.1.1 spec 3.2.2.3), and the mapping between them, so the gateway decides once
//! ("not authorized") and the codec says it in the connection's version (0x87 or return code 5).

macro_rules! reason_codes {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        /// An MQTT 5.0 reason code. One value can have several names in the spec (0x00 is
        /// Success, Normal disconnection and Granted QoS 0); the variant takes the first.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum ReasonCode {
            $(#[doc = $text] $name = $value,)*
        }

        impl ReasonCode {
            /// Every reason code, in ascending order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$name,)*];

            /// The reason code with this value, if MQTT 5 defines one.
            pub fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $($value => Some(Self::$name),)*
                    _ => None,
                }
            }

            /// The spec's name for the code.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                }
            }
        }
    };
}

reason_codes! {
    Success = 0x00, "Success";
    GrantedQos1 = 0x01, "Granted QoS 1";
    GrantedQos2 = 0x02, "Granted QoS 2";
    DisconnectWithWillMessage = 0x04, "Disconnect with Will Message";
    NoMatchingSubscribers = 0x10, "No matching subscribers";
    NoSubscriptionExisted = 0x11, "No subscription existed";
    ContinueAuthentication = 0x18, "Continue authentication";
    ReAuthenticate = 0x19, "Re-authenticate";
    UnspecifiedError = 0x80, "Unspecified error";
    MalformedPacket = 0x81, "Malformed Packet";
    ProtocolError = 0x82, "Protocol Error";
    ImplementationSpecificError = 0x83, "Implementation specific error";
    UnsupportedProtocolVersion = 0x84, "Unsupported Protocol Version";
    ClientIdentifierNotValid = 0x85, "Client Identifier not valid";
    BadUserNameOrPassword = 0x86, "Bad User Name or Password";
    NotAuthorized = 0x87, "Not authorized";
    ServerUnavailable = 0x88, "Server unavailable";
    ServerBusy = 0x89, "Server busy";
    Banned = 0x8a, "Banned";
    ServerShuttingDown = 0x8b, "Server shutting down";
    BadAuthenticationMethod = 0x8c, "Bad authentication method";
    KeepAliveTimeout = 0x8d, "Keep Alive timeout";
    SessionTakenOver = 0x8e, "Session taken over";
    TopicFilterInvalid = 0x8f, "Topic Filter invalid";
    TopicNameInvalid = 0x90, "Topic Name invalid";
    PacketIdentifierInUse = 0x91, "Packet Identifier in use";
    PacketIdentifierNotFound = 0x92, "Packet Identifier not found";
    ReceiveMaximumExceeded = 0x93, "Receive Maximum exceeded";
    TopicAliasInvalid = 0x94, "Topic Alias invalid";
    PacketTooLarge = 0x95, "Packet too large";
    MessageRateTooHigh = 0x96, "Message rate too high";
    QuotaExceeded = 0x97, "Quota exceeded";
    AdministrativeAction = 0x98, "Administrative action";
    PayloadFormatInvalid = 0x99, "Payload format invalid";
    RetainNotSupported = 0x9a, "Retain not supported";
    QosNotSupported = 0x9b, "QoS not supported";
    UseAnotherServer = 0x9c, "Use another server";
    ServerMoved = 0x9d, "Server moved";
    SharedSubscriptionsNotSupported = 0x9e, "Shared Subscriptions not supported";
    ConnectionRateExceeded = 0x9f, "Connection rate exceeded";
    MaximumConnectTime = 0xa0, "Maximum connect time";
    SubscriptionIdentifiersNotSupported = 0xa1, "Subscription Identifiers not supported";
    WildcardSubscriptionsNotSupported = 0xa2, "Wildcard Subscriptions not supported";
}

impl ReasonCode {
    /// Codes of 0x80 and above report a failure (spec 2.4).
    pub fn is_error(self) -> bool {
        self as u8 >= 0x80
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} ({:#04x})", self.name(), *self as u8)
    }
}

/// MQTT 3.1.1's CONNACK return codes (3.1.1 spec table 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    Accepted = 0,
    UnacceptableProtocolVersion = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUserNameOrPassword = 4,
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Accepted,
            1 => Self::UnacceptableProtocolVersion,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadUserNameOrPassword,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }

    /// The MQTT 5 reason code that says the same thing; every return code has one.
    pub fn to_reason_code(self) -> ReasonCode {
        match self {
            Self::Accepted => ReasonCode::Success,
            Self::UnacceptableProtocolVersion => ReasonCode::UnsupportedProtocolVersion,
            Self::IdentifierRejected => ReasonCode::ClientIdentifierNotValid,
            Self::ServerUnavailable => ReasonCode::ServerUnavailable,
            Self::BadUserNameOrPassword => ReasonCode::BadUserNameOrPassword,
            Self::NotAuthorized => ReasonCode::NotAuthorized,
        }
    }

    /// The return code for a CONNACK reason code when the two mean exactly the same thing.
    pub fn exact(code: ReasonCode) -> Option<Self> {
        Some(match code {
            ReasonCode::Success => Self::Accepted,
            ReasonCode::UnsupportedProtocolVersion => Self::UnacceptableProtocolVersion,
            ReasonCode::ClientIdentifierNotValid => Self::IdentifierRejected,
            ReasonCode::ServerUnavailable => Self::ServerUnavailable,
            ReasonCode::BadUserNameOrPassword => Self::BadUserNameOrPassword,
            ReasonCode::NotAuthorized => Self::NotAuthorized,
            _ => return None,
        })
    }

    /// The nearest return code for any CONNACK reason code, for a 3.1.1 client: refusals of
    /// the client's identity or rights become Not authorized, anything else the server could
    /// not do becomes Server unavailable (3.1.1 has nothing finer).
    pub fn closest(code: ReasonCode) -> Self {
        if let Some(exact) = Self::exact(code) {
            return exact;
        }
        match code {
            ReasonCode::Banned | ReasonCode::BadAuthenticationMethod => Self::NotAuthorized,
            ReasonCode::GrantedQos1 | ReasonCode::GrantedQos2 => Self::Accepted,
            _ if !code.is_error() => Self::Accepted,
            _ => Self::ServerUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_roundtrip_through_their_values() {
        assert_eq!(ReasonCode::ALL.len(), 43);
        for &code in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_u8(code as u8), Some(code));
        }
        let n_defined = (0..=255u8).filter_map(ReasonCode::from_u8).count();
        assert_eq!(n_defined, ReasonCode::ALL.len());
        assert_eq!(ReasonCode::MalformedPacket.to_string(), "Malformed Packet (0x81)");
    }

    #[test]
    fn every_return_code_maps_to_a_reason_code_and_back() {
        for value in 0..=5 {
            let return_code = ConnectReturnCode::from_u8(value);
            let back = return_code.and_then(|code| ConnectReturnCode::exact(code.to_reason_code()));
            assert_eq!(back, return_code);
        }
        assert_eq!(ConnectReturnCode::from_u8(6), None);
        // Every CONNACK failure reaches a 3.1.1 client as a refusal, never as "accepted".
        for &code in ReasonCode::ALL.iter().filter(|code| code.is_error()) {
            assert_ne!(ConnectReturnCode::closest(code), ConnectReturnCode::Accepted, "{code}");
        }
    }
}
