package main

import (
	"strings"
	"testing"
)

func TestLoadConfigRefusesBadValues(t *testing.T) {
	for _, test := range []struct {
		name, value, wantVar string
	}{
		{"GRPC_PORT", "http", "GRPC_PORT"},
		{"GRPC_PORT", "70000", "GRPC_PORT"},
		{"METRICS_PORT", "-1", "METRICS_PORT"},
		{"HTTP_READ_TIMEOUT", "10", "HTTP_READ_TIMEOUT"},
		{"SHUTDOWN_TIMEOUT", "-5s", "SHUTDOWN_TIMEOUT"},
		{"DICT_PARTICIPANTS", "12345678,abc", "DICT_PARTICIPANTS"},
		{"DICT_PARTICIPANT_NAMES", "Banco", "DICT_PARTICIPANT_NAMES"},
		{"LOG_LEVEL", "loud", "LOG_LEVEL"},
		{"MAX_REQUEST_BYTES", "10", "MAX_REQUEST_BYTES"},
	} {
		t.Run(test.name+"="+test.value, func(t *testing.T) {
			t.Setenv(test.name, test.value)
			_, err := loadConfig()
			if err == nil {
				t.Fatalf("%s=%q accepted", test.name, test.value)
			}
			if !strings.HasPrefix(err.Error(), test.wantVar) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q does not open with %s on one line", err, test.wantVar)
			}
		})
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Setenv("DICT_PARTICIPANTS", " 12345678 , 87654321 ")
	t.Setenv("DICT_PARTICIPANT_NAMES", "12345678=Banco A")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPCPort != 9090 || c.MetricsPort != 9091 {
		t.Errorf("ports = %d, %d; want 9090, 9091", c.GRPCPort, c.MetricsPort)
	}
	if len(c.Participants) != 2 || c.Participants[1] != "87654321" {
		t.Errorf("participants = %v", c.Participants)
	}
	if c.ParticipantNames["12345678"] != "Banco A" {
		t.Errorf("names = %v", c.ParticipantNames)
	}
}
