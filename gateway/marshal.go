package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
)

// jsonMarshaler is grpc-gateway's protojson marshaler with the settings of
// Duet's REST API, and decode errors reworded for clients.
//
// Output is proto3 JSON: lowerCamelCase names, enums by name, 64-bit
// integers as strings, unset fields left out (EmitUnpopulated would fill
// every response with empty strings and nulls). Input is strict: an unknown
// field or enum name is an error, not silently dropped, so a client's typo
// cannot turn into a request that does something else.
type jsonMarshaler struct {
	*runtime.JSONPb
}

func newJSONMarshaler() jsonMarshaler {
	return jsonMarshaler{&runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: false, EmitUnpopulated: false},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
}

// Unmarshal implements runtime.Marshaler.
func (m jsonMarshaler) Unmarshal(data []byte, v any) error {
	return bodyError(m.JSONPb.Unmarshal(data, v))
}

// NewDecoder implements runtime.Marshaler. A request body is one JSON
// value: anything after it but white space is an error, where
// grpc-gateway's decoder would silently ignore it.
func (m jsonMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	d := m.JSONPb.NewDecoder(r)
	return runtime.DecoderFunc(func(v any) error {
		if err := d.Decode(v); err != nil {
			return bodyError(err)
		}
		if dw, ok := d.(runtime.DecoderWrapper); ok {
			if _, err := dw.Token(); err != io.EOF {
				return errors.New("invalid JSON body: unexpected data after the JSON value")
			}
		}
		return nil
	})
}

// bodyError rewords a decode error as a client-facing message. The
// generated handlers turn it into INVALID_ARGUMENT with this text; io.EOF
// (an empty body) passes through untouched because they treat it as "no
// body" rather than an error.
func bodyError(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("invalid JSON body: unexpected end of input")
	}
	if _, ok := errors.AsType[net.Error](err); ok || errors.Is(err, errBodyRead) {
		// Reading the body failed (the client stalled past the read
		// timeout, say): its text names the server's own address.
		return errBodyRead
	}
	msg := trimProtoPrefix(err.Error())
	if strings.HasPrefix(msg, "(") {
		return fmt.Errorf("invalid JSON body %s", msg)
	}
	return fmt.Errorf("invalid JSON body: %s", msg)
}

// trimProtoPrefix removes the "proto: " that protobuf-go puts before its
// error messages; it deliberately alternates between a space and a
// no-break space, so both are trimmed.
func trimProtoPrefix(msg string) string {
	rest, ok := strings.CutPrefix(msg, "proto:")
	if !ok {
		return msg
	}
	return strings.TrimLeft(rest, " \u00a0")
}
