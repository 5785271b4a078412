#!/bin/bash
# Regenerates the IAK certificate fixtures with openssl (an implementation independent of
# ours), for verifier-core/tests/iak_cert.rs. Run from this directory (openssl 3).
#   iak-root.pem     a test OEM CA
#   iak.pem          an IAK certificate by it: subject serialNumber, subjectAltName otherName
#                    hardwareModuleName (hwType TPM 2.0, hwSerialNum), extKeyUsage
#                    tcg-kp-AIKCertificate
#   iak-idevid.pem   the same without the IAK purpose (as an IDevID certificate)
#   iak-tpm12.pem    the same with hwType 2.23.133.1.1
#   iak-no-hmn.pem   the same without subjectAltName
#   iak-as-ca.pem    the same with basicConstraints cA=TRUE
#   iak-key.hex      the certified key's uncompressed P-256 point (the AK's public key)
#   iak-other-key.hex another P-256 point (the CA's), for an AK the certificate is not for
set -eu
umask 022
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cat > "$T/ext.cnf" <<'X'
[req]
distinguished_name = dn
[dn]
[root]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[iak]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = 2.23.133.8.3
subjectAltName = otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hmn
[idevid]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectAltName = otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hmn
[tpm12]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = 2.23.133.8.3
subjectAltName = otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hmn12
[nohmn]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = 2.23.133.8.3
[asca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyCertSign
extendedKeyUsage = 2.23.133.8.3
subjectAltName = otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hmn
[hmn]
hwType = OID:2.23.133.1.2
hwSerialNum = OCTETSTRING:OEM-TPM-0001
[hmn12]
hwType = OID:2.23.133.1.1
hwSerialNum = OCTETSTRING:OEM-TPM-0001
X
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
ec "$T/root.key"; ec "$T/iak.key"
openssl req -new -x509 -key "$T/root.key" -subj "/O=Test OEM/CN=Test OEM Device Identity CA" \
  -sha256 -days 36500 -set_serial 1 -config "$T/ext.cnf" -extensions root -out iak-root.pem
openssl req -new -key "$T/iak.key" -subj "/CN=Test device IAK/serialNumber=OEM-TPM-0001" \
  -config "$T/ext.cnf" -out "$T/iak.csr"
n=10
for ext in iak idevid tpm12 nohmn asca; do
  case "$ext" in iak) out=iak.pem ;; nohmn) out=iak-no-hmn.pem ;; asca) out=iak-as-ca.pem ;; *) out="iak-$ext.pem" ;; esac
  openssl x509 -req -in "$T/iak.csr" -CA iak-root.pem -CAkey "$T/root.key" -sha256 -days 36500 \
    -set_serial "$n" -extfile "$T/ext.cnf" -extensions "$ext" -out "$out" 2>/dev/null
  n=$((n + 1))
done
# The public key's BIT STRING contents: 04 || x || y.
openssl pkey -in "$T/iak.key" -pubout -outform DER | tail -c 65 | od -An -tx1 | tr -d ' \n' > iak-key.hex
echo >> iak-key.hex
openssl pkey -in "$T/root.key" -pubout -outform DER | tail -c 65 | od -An -tx1 | tr -d ' \n' > iak-other-key.hex
echo >> iak-other-key.hex
