package dict

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/google/uuid"
)

// cidLen is the length of a CID: 256 bits in hex.
const cidLen = 2 * sha256.Size

// CID returns the content identifier of an entry (DOMAIN.md, "Synchronisation"):
// the lowercase hex HMAC-SHA256, keyed with the 16 bytes of requestID (the
// RequestId of the request that created the entry), over
//
//	keyType&key&ownerTaxIdNumber&ownerName&ownerTradeName&participant&branch&accountNumber&accountType
//
// with key type and account type by their DICT names ("CPF", "CACC"), absent
// values as empty strings, and the account's opening date left out. The entry
// must already be canonical ([NormalizeKey], [Account.Normalize],
// [Owner.Normalize]): the DICT computes the same CID over its canonical copy.
func CID(requestID uuid.UUID, e Entry) string {
	fields := [...]string{
		enumName(e.KeyType != KeyTypeUnspecified, e.KeyType.String()),
		e.Key,
		e.Owner.TaxID,
		e.Owner.Name,
		e.Owner.TradeName,
		e.Account.Participant,
		e.Account.Branch,
		e.Account.Number,
		enumName(e.Account.Type != AccountTypeUnspecified, e.Account.Type.String()),
	}
	mac := hmac.New(sha256.New, requestID[:])
	for i, f := range fields {
		if i > 0 {
			mac.Write([]byte{'&'})
		}
		mac.Write([]byte(f))
	}
	return hex.EncodeToString(mac.Sum(nil))
}

// enumName is an enum's DICT name, or "" when the value is absent.
func enumName(present bool, name string) string {
	if !present {
		return ""
	}
	return name
}

// VSync returns the synchronisation verifier of a set of CIDs: their XOR, as
// 64 lowercase hex digits, 64 zeros when there are none. The order of the
// CIDs does not matter.
//
// It panics if a CID is not 64 lowercase hex digits. CIDs come only from
// [CID]; a malformed one means a bug or a corrupt store, and a VSync that
// silently skipped it would be wrong without saying so. Use [CIDWords] to
// check CIDs from outside first.
func VSync(cids []string) string {
	var acc [sha256.Size]byte
	for i, c := range cids {
		b, err := parseCID(c)
		if err != nil {
			panic(fmt.Sprintf("dict.VSync: CID %d: %v", i, err))
		}
		for j := range acc {
			acc[j] ^= b[j]
		}
	}
	return hex.EncodeToString(acc[:])
}

// CIDWords splits a CID (or a VSync) into four big-endian signed 64-bit
// words, most significant first: the form the database keeps, four bigint
// columns whose bit_xor aggregates make a VSync. Because XOR works bit by bit,
// the words of an XOR are the XOR of the words. A cid that is not 64
// lowercase hex digits is refused with a [KindInvalid] error on field "cid".
func CIDWords(cid string) ([4]int64, error) {
	b, err := parseCID(cid)
	if err != nil {
		return [4]int64{}, err
	}
	var w [4]int64
	for i := range w {
		w[i] = int64(binary.BigEndian.Uint64(b[8*i:]))
	}
	return w, nil
}

// WordsToHex is the inverse of [CIDWords].
func WordsToHex(w [4]int64) string {
	var b [sha256.Size]byte
	for i, x := range w {
		binary.BigEndian.PutUint64(b[8*i:], uint64(x))
	}
	return hex.EncodeToString(b[:])
}

func parseCID(cid string) ([sha256.Size]byte, error) {
	var b [sha256.Size]byte
	if len(cid) != cidLen {
		return b, Invalid("cid", "CID must be %d lowercase hex digits; got %d characters", cidLen, len(cid))
	}
	for i := 0; i < len(cid); i++ {
		if c := cid[i]; !isDigit(c) && (c < 'a' || c > 'f') {
			return b, Invalid("cid", "CID must be %d lowercase hex digits; found %s", cidLen, offending(cid, i))
		}
	}
	hex.Decode(b[:], []byte(cid)) // cannot fail: checked above
	return b, nil
}
