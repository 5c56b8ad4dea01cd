package api

import (
	"errors"
	"io"
)

// upload is the file of a POST /add as the backend reads it. It counts the
// bytes and keeps the first read error, so that an upload that does not
// end properly is answered with what happened to it (400) rather than with
// whatever the backend made of the failed read: an HTTP/1 server cancels
// the request's context when the connection breaks, and the backend then
// reports the cancellation.
type upload struct {
	r         io.Reader
	multipart bool  // the file is a part of a multipart/form-data body
	length    int64 // the body's Content-Length; -1 when unknown (chunked)
	n         int64
	err       error
}

func (u *upload) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	u.n += int64(n)
	if err != nil && err != io.EOF && u.err == nil { // io.Reader returns io.EOF itself, never wrapped
		u.err = u.failure(err)
	}
	return n, err
}

// failure says in one sentence how the upload failed with err.
func (u *upload) failure(err error) error {
	cut := errors.Is(err, io.ErrUnexpectedEOF)
	switch {
	case cut && u.multipart:
		return badRequest("the upload ended after %d bytes of the file, before the multipart body's closing boundary; the file was not added", u.n)
	case cut && u.length >= 0:
		return badRequest("the upload ended after %d of its %d bytes; the file was not added", u.n, u.length)
	case cut:
		return badRequest("the upload ended after %d bytes, before the end of its chunked body; the file was not added", u.n)
	}
	return badRequest("the upload could not be read after %d bytes (%v); the file was not added", u.n, err)
}

// cause is the error to answer an add that failed with err: the upload's
// own failure when it had one, which is what made the add fail.
func (u *upload) cause(err error) error {
	if err != nil && u.err != nil {
		return u.err
	}
	return err
}
