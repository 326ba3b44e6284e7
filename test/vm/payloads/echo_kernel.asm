; A stand-in kernel (64-bit entry, like hello_kernel.asm) that exercises the interactive console
; path of `vessel vm run` on KVM: it programs the in-kernel 8259 (IRQ4 unmasked, vectors 0x20-),
; enables the UART's receive interrupt (IER.ERBFI, MCR.OUT2), prints "echo ready\n", writes the
; userspace marker, and halts with interrupts on. Each byte typed on the console arrives through
; the main thread's input ring, a kick of the machine thread out of KVM_RUN, the UART model and
; KVM_IRQ_LINE 4; the handler echoes it back. 'q' exits with status 3 through the debug-exit port.
bits 64
default rel
BOOT_CS equ 0x10            ; boot/linux_loader.ts BOOT_CS
  lea rdi, [idt]
  lea rax, [uart_irq]
  mov [rdi + 0x24 * 16], ax
  mov word [rdi + 0x24 * 16 + 2], BOOT_CS
  mov word [rdi + 0x24 * 16 + 4], 0x8e00
  shr rax, 16
  mov [rdi + 0x24 * 16 + 6], ax
  shr rax, 16
  mov [rdi + 0x24 * 16 + 8], eax
  lea rax, [idt]
  mov [idtr + 2], rax
  lidt [idtr]
  mov al, 0x11
  out 0x20, al
  mov al, 0x20
  out 0x21, al
  mov al, 0x04
  out 0x21, al
  mov al, 0x01
  out 0x21, al
  mov al, 0xef              ; only IRQ4 (COM1)
  out 0x21, al
  mov al, 0xff
  out 0xa1, al
  mov dx, 0x3f9
  mov al, 1                 ; IER: received data available
  out dx, al
  mov dx, 0x3fc
  mov al, 0x0b              ; MCR: DTR | RTS | OUT2
  out dx, al
  lea rsi, [msg]
  mov ecx, msg_len
  mov dx, 0x3f8
.print:
  lodsb
  out dx, al
  loop .print
  mov al, 1
  out 0xf4, al              ; userspace marker
  sti
idle:
  hlt
  jmp idle

uart_irq:
  push rax
  push rdx
.more:
  mov dx, 0x3fd
  in al, dx
  test al, 1
  jz .done
  mov dx, 0x3f8
  in al, dx
  cmp al, 'q'
  je .quit
  out dx, al
  jmp .more
.done:
  mov al, 0x20
  out 0x20, al
  pop rdx
  pop rax
  iretq
.quit:
  mov al, 3
  out 0xf5, al
  jmp idle

msg: db "echo ready", 10
msg_len equ $ - msg
align 16
idtr:
  dw 256 * 16 - 1
  dq 0
align 16
idt: times 256 * 16 db 0
