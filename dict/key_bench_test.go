package dict_test

import (
	"testing"

	"github.com/lbpay-lab/core-dict/dict"
)

func BenchmarkNormalizeKey(b *testing.B) {
	for _, bench := range []struct {
		name    string
		keyType dict.KeyType
		raw     string
	}{
		{"CPF", dict.KeyTypeCPF, "123.456.789-09"},
		{"CNPJ", dict.KeyTypeCNPJ, "11.222.333/0001-81"},
		{"CNPJAlnum", dict.KeyTypeCNPJ, "12.abc.345/01de-35"},
		{"PHONE", dict.KeyTypePhone, "+55 (61) 98888-0000"},
		{"EMAIL", dict.KeyTypeEmail, " Fulano.Beltrano@Example.COM.br "},
		{"EVP", dict.KeyTypeEVP, "123E4567-E89B-12D3-A456-426614174000"},
	} {
		b.Run(bench.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dict.NormalizeKey(bench.keyType, bench.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
