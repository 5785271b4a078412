#!/bin/bash
# Regenerates iak-openssl.pem: an IAK-style certificate made by openssl (an implementation
# independent of ours) with the TCG device identity fields the IAK path reads: subject
# serialNumber, subjectAltName otherName hardwareModuleName (hwType TPM 2.0, hwSerialNum),
# extKeyUsage tcg-kp-AIKCertificate. Self-signed: only its decoding is tested with it
# (verifier-core/tests/iak_cert.rs); chains and refusals are tested end to end
# (unlock-server/tests/e2e_iak.rs). Run from this directory (openssl 3).
set -eu
umask 077
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cat > "$T/ext.cnf" <<'X'
[req]
distinguished_name = dn
[dn]
[iak]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = 2.23.133.8.3
subjectAltName = otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hmn
[hmn]
hwType = OID:2.23.133.1.2
hwSerialNum = OCTETSTRING:OEM-TPM-0001
X
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/k.pem"
openssl req -new -x509 -key "$T/k.pem" -subj "/CN=Test device IAK/serialNumber=OEM-TPM-0001" \
  -sha256 -days 36500 -set_serial 10 -config "$T/ext.cnf" -extensions iak -out iak-openssl.pem
