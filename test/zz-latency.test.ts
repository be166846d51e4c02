import { Client } from 'ssh2';
import * as net from 'node:net';
import { startSshd } from './helpers/sshd';
describe('zz latency', function () {
  this.timeout(60000);
  it('measures', async () => {
    const sshd = await startSshd('lat');
    const sock = net.connect({ host: '127.0.0.1', port: sshd.port }); sock.setNoDelay(true);
    const c = new Client();
    const t0 = Date.now();
    const ev: string[] = [];
    await new Promise<void>((r) => { c.on('ready', () => r()); c.connect({ sock, username: 'root', privateKey: sshd.clientKey, debug: (m) => ev.push(`${Date.now() - t0} ${m}`) }); });
    for (let i = 0; i < 2; i++) {
      ev.push(`${Date.now() - t0} ---- exec`);
      await new Promise<void>((r) => c.exec('true', (e, s) => { ev.push(`${Date.now() - t0} cb`); s.on('exit', () => ev.push(`${Date.now() - t0} exit`)); s.on('close', () => { ev.push(`${Date.now() - t0} close`); r(); }); s.resume(); }));
    }
    console.log(ev.slice(-40).join('\n'));
    console.log(sshd.log().slice(-1500));
    c.end(); await sshd.stop();
  });
});
